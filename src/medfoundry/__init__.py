"""medfoundry: foundation models for medical image segmentation and abnormality detection."""

__version__ = "0.1.0"

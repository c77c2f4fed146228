"""``medfoundry view``: a local web viewer to prompt, correct and save segmentations (FastAPI + NiiVue).

Layer: ``api < viewer < demo < cli`` (imports :mod:`medfoundry.api` and below; :mod:`medfoundry.cli.view` uses it).
"""

from medfoundry.viewer.session import ViewerSession

__all__ = ["ViewerSession", "create_app", "ViewerServer"]


def __getattr__(name: str):
    # the web stack (FastAPI, uvicorn) is imported only when the app or server is asked for
    if name == "create_app":
        from medfoundry.viewer.app import create_app

        return create_app
    if name == "ViewerServer":
        from medfoundry.viewer.server import ViewerServer

        return ViewerServer
    raise AttributeError(name)

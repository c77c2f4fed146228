"""Defaults of ``finetune`` (docs/adaptation.md, "Defaults that do not depend on the validation patients"), in a
module without torch so that the CLI's parser and the API's ``FinetuneOptions`` share them.

Validation every 25 steps of batch 4; at most 12 epochs (300 steps) for the frozen-encoder methods and 8 for LoRA /
DB-SAM (4 decoder warm-up epochs, then up to 4 through the encoder, ~8 min each on 2 CPU cores); early stopping
after 3 epochs without a better validation score, counted only from epoch 6 (150 steps: every training slice of 10
patients seen about once)."""

EPOCHS = {"decoder": 12, "classprompt": 12, "lora": 8, "dbsam": 8}
STEPS, PATIENCE, MIN_EPOCHS = 25, 3, 6
DECODER_WARMUP = 4  # lora / dbsam: 100 decoder-side steps on cached embeddings before the encoder's adapters train
MIN_VAL_CASES = 3  # a patient-wise split keeps at least this many validation patients where the folder allows

"""Stage-2 training of AnomalyGPT (imported only by `agpt train` and its tests).

Reads in the order a training sample is made: `simulation` (anomalies drawn onto normal images,
exact masks, answer text) → `datasets` (where the normal images come from) → `samples` (seeded
batches) → `losses` → `lm_inputs` (answer-token labels) → `trainer` → `config` (the file
`agpt train --config` reads).
"""

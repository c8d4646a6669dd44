"""Text-to-text tasks on a decoder LM (`model.kind: decoder`).

Every task is a prompt whose answer is text: classification tasks answer with their label's
verbalizer words (scored, not generated), generation tasks write their target text. One causal
LM serves all tasks; rows of several tasks share a batch. Modules:

    checks.py     config checks that depend on model.kind (called by config.load.check_config)
    tasks.py      T2TTask: what a bundle records per task (template, verbalizer, answer budget)
    data.py       tokenize prompt + answer (loss only on the answer), left-padded mixed-task batches
    model.py      the LM wrapper: load, shared LoRA (peft), per-task soft prompts, token log-probs
    infer.py      verbalizer scoring, greedy decoding, predictions and metrics
    bundle.py     save / load a text-to-text bundle
    trainer.py    the training loop
    predictor.py  Predictor for text-to-text bundles
    gemma.py      the packaged Gemma 3 270M: GGUF -> cached Hugging Face folder
"""

"""Fine-tuning jobs, one per file, each run by `modelport finetune ...`:

    text.py         a causal LM from the store on your text (transformers Trainer, optional LoRA)
    detector.py     the YOLO plate detector on a YOLO dataset (Ultralytics)
    gpt2_simple.py  gpt-2-simple / OpenAI TensorFlow GPT-2 checkpoints: import, or train with it

and what they share: text_data.py / yolo_data.py (loading and checking your data, the photos ->
YOLO dataset helper), store.py (base models in, new versions out), tf_checkpoint.py (reads
TensorFlow checkpoints without TensorFlow).
"""

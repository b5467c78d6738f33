"""The embedded default model: a small GPT-2 trained by lenslab on a synthetic world.

No machine reaches the model hub, so the default study runs on a model lenslab trains itself:
``world`` holds the entities, relations and templates; ``corpus`` draws the training documents,
evaluation items and held-out text; ``tokenizer`` builds a word-level tokenizer (one token per
word); ``train.train_embedded_model`` trains the model and saves it in Hugging Face format.
"""

"""Rule corpus: the tuned lens's text for a model, written to results/corpus/<model>.jsonl.

``tuned_lens.text.source``: ``wheel`` (files of a pinned PyPI wheel, lenslab.corpus) or
``sampled`` (the model's own samples with a fixed seed).
"""

from pathlib import Path

from lenslab.corpus import sample_documents, wheel_documents, write_corpus
from lenslab.gate import load_model
from lenslab.joblog import start_log
from lenslab.lenses.tuned_config import parse_settings
from lenslab.models.load import load_tokenizer
from lenslab.runtime import setup
from lenslab.wheels import CACHE_SUBDIR, fetch_wheel

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
text = parse_settings({"text": params.text}).text
setup(seed=text.seed)
if text.source == "wheel":
    cache = Path(params.cache_dir) / CACHE_SUBDIR
    wheel = fetch_wheel(text.distribution, text.version, text.sha256, cache)
    tokenizer = load_tokenizer(params.model, params.model_path)
    docs = wheel_documents(wheel, text.members, tokenizer, text.tokens, text.seed)
    print(f"{len(docs)} files of {wheel.name} matching {text.members!r}: >= {text.tokens} tokens")
else:
    adapter = load_model(params.model, params.model_path)
    docs = sample_documents(
        adapter.model, adapter.tokenizer, text.tokens, seed=text.seed, doc_tokens=text.doc_tokens
    )
    print(f"{len(docs)} documents of {text.doc_tokens} sampled tokens")
write_corpus(docs, snakemake.output.corpus)

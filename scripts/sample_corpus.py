"""Rule sample_corpus: the model's own samples (fixed seed) as the tuned lens's text."""

from lenslab.corpus import sample_documents, write_corpus
from lenslab.gate import load_model
from lenslab.joblog import start_log
from lenslab.runtime import setup

start_log(snakemake)  # everything this job prints goes to its rule's log

params = snakemake.params
setup(seed=int(params.text["seed"]))
adapter = load_model(params.model, params.model_path)
docs = sample_documents(
    adapter.model,
    adapter.tokenizer,
    n_tokens=int(params.text["tokens"]),
    seed=int(params.text["seed"]),
    doc_tokens=int(params.text["doc_tokens"]),
)
write_corpus(docs, snakemake.output.corpus)
print(f"{len(docs)} documents of {params.text['doc_tokens']} sampled tokens")

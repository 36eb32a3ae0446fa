"""Tasks: labelled corpora (``corpora``, ``hf``, ``synthetic``, ``registry``), prompts and
verbalizers (``prompts``), classifiers over a model (``classifiers``), batching, metrics
and partitioning over clients (``partition``). Import from the submodules; this package
imports nothing heavy itself."""

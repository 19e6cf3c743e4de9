"""Luigi tasks and the ``t2v`` command line: thin wrappers over data_manifest, pipeline and extractors.

The task modules are imported here so that ``luigi --module workflows FeatureSet ...`` finds every task; they
import the model libraries lazily, inside ``run``, so this costs little.
"""

from workflows import tasks_extract, tasks_store, tasks_train  # noqa: F401  (registers the Luigi tasks)

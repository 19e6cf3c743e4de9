"""Luigi tasks and the ``t2v`` command line: thin wrappers over data_manifest, pipeline and extractors.

``luigi --module workflows <Task> ...`` finds every task because they are imported here.
"""

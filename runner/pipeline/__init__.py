"""Declarative pipelines: YAML files of steps that compile to tasks.

``load_pipeline(path)`` reads and validates a file (every problem at once, with file:line:col);
``submit(app, pipeline, params)`` starts a run; the worker's pipeline middleware moves runs
forward as steps finish, so no central process needs to stay up.
"""

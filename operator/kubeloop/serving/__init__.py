"""The reference model server, the model fetcher and the model-directory format they share.

Kept free of imports so that a training script can use :mod:`kubeloop.serving.model`
and :mod:`kubeloop.serving.fetch` without pulling in the HTTP server's dependencies.
"""

"""The reference model server and the model fetcher.

Kept free of imports so that :mod:`kubeloop.serving.fetch` can be used without the
server's dependencies. The model directory's format is :mod:`kubeloop.modeldir`.
"""

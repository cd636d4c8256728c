"""Device models: latency tables for targets we cannot measure on, from calibrated analytic models.

`pixel1` - Google Pixel 1 (Snapdragon 821, one big Kryo core, TFLite float32): a per-op roofline
model fitted on published whole-net, per-layer and per-op latencies, validated by leaving each
source out (see `PIXEL1.md`). Build its tables with
``python -m latency.devices.pixel1_calibration table --space mbconv --out latency/tables/pixel1/mbconv.json``.
"""

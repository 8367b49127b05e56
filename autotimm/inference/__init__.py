"""Using a trained model: load it from its checkpoint alone, predict, export, describe it.

`autotimm.predict` and `autotimm.export` are the command lines; the parts live here:
`checkpoint` (MODEL -> checkpoint -> model + preprocessing), `images` (inputs, eval
transform), `tta`, `writers`, the exporters (`onnx_format`, `torch_formats`,
`timm_format`), `parity` (the numeric check of every export) and `model_card`.
"""

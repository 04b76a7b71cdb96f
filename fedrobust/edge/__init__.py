"""The edge runtime: run an exported fedrobust ONNX model with numpy, onnxruntime and Pillow only.

Nothing under ``fedrobust.edge`` may import torch (a test checks it in a fresh interpreter), so
this package runs on a device that has onnxruntime and nothing else of the training stack.
"""

"""Edge export: ONNX (fp32, parity-checked) and int8 static quantization."""

from fedrobust.export.onnx_export import ExportError, check_parity, export_onnx
from fedrobust.export.run import EXPORT_DIR, export, export_run

__all__ = ["EXPORT_DIR", "ExportError", "check_parity", "export", "export_onnx", "export_run"]

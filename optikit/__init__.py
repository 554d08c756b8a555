"""optikit: compress a trained classifier with pluggable passes and measure every variant against the original."""
from optikit.api import bench, compress, compress_chain, demo, import_model, load, write_html, write_report
from optikit.errors import OptikitError
from optikit.harness.results import Results
from optikit.integrations.modules import from_module
from optikit.teach import teach
from optikit.variant import Variant

__all__ = ["OptikitError", "Results", "Variant", "bench", "compress", "compress_chain", "demo", "from_module", "import_model",
           "load", "teach", "write_html", "write_report"]
__version__ = "0.1.0"

"""Data: the catalog of supported MedMNIST flags (``catalog``), loading splits as tensors
(``loading``), client partitions (``partition``). Import from those modules: this package
re-exports nothing, so a light import (the config's partition schemes) does not load torch."""

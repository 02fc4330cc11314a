"""A package face whose names load on first use (PEP 562).

So that `import tftransfer` and `tftransfer --help` never wait for
TensorFlow: a name's module is imported when the name is first read.
"""

import importlib
from typing import Callable, Dict, Tuple


def lazy_names(namespace: Dict[str, object], public: Dict[str, str]) -> Tuple[Callable, Callable]:
    """Returns a package's `__getattr__` and `__dir__` for names that load on first use.

    Args:
        namespace: The package's `globals()`; a name read once is kept in it.
        public: `{name: module}`. A name whose module is the name itself
            (`"distribute": "tftransfer.training.distribute"`) is the module.

    Returns:
        `(__getattr__, __dir__)`.
    """

    def __getattr__(name):
        where = public.get(name)
        if where is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        module = importlib.import_module(where)
        value = module if where.rpartition(".")[2] == name and not hasattr(module, name) \
            else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__

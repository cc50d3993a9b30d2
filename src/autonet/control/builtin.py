"""The built-in plugin: autonet's own kinds and operators, registered like any plugin's.

It is the `builtin` entry point of the `autonet.plugins` group (see pyproject.toml).
Each module of `control/operators/` collects its module-level handlers in its
`operators` set; this plugin takes them all in.
"""

from __future__ import annotations

from autonet.control.operators import automatons, hosts, instances, network, tenancy
from autonet.control.registry import PluginAPI
from autonet.model.kinds import builtin_kinds

OPERATOR_MODULES = (hosts, tenancy, automatons, instances)


def plugin(api: PluginAPI) -> None:
    for kind in builtin_kinds():
        api.add_kind(kind)
    for module in OPERATOR_MODULES:
        api.add_operators(module.operators)
    api.run_in_background(network.repair_forever)

"""The field tables of the served kinds (each module registers its structs with ``kmesh.api.fieldschema``)."""

from kmesh.api.schemas import apps, certificates, coordination, core, discovery, gateway, meta, networking, pod  # noqa: F401

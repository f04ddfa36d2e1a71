"""The node agent: kubelet-lite, pod runtimes (sim, netns) and built-in apps.

Public API: ``AgentConfig`` and ``run_agent`` (kmesh.node.agent), the
``PodRuntime`` protocol (kmesh.node.runtime), ``SimRuntime`` (kmesh.node.sim)
and the built-in app registry ``register_app`` / ``APPS`` (kmesh.node.apps).
"""

from kmesh.node.agent import Agent, AgentConfig, run_agent
from kmesh.node.apps import APPS, AppContext, register_app
from kmesh.node.runtime import ContainerHandle, PodRuntime, Sandbox
from kmesh.node.sim import SimRuntime

__all__ = [
    "APPS", "Agent", "AgentConfig", "AppContext", "ContainerHandle", "PodRuntime", "Sandbox", "SimRuntime",
    "register_app", "run_agent",
]

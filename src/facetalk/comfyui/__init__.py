"""ComfyUI nodes for facetalk: a drop-in for Sonic's sampler in existing workflows.

The classic node API only (``NODE_CLASS_MAPPINGS`` and friends): importing this package
imports neither ComfyUI nor torch, so it loads in any ComfyUI version and outside
ComfyUI (tests, the converter). ``facetalk comfyui install --comfyui-dir DIR`` writes a
two-line loader into ``DIR/custom_nodes/facetalk/`` that imports these mappings.
"""

from __future__ import annotations

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, FaceTalkGenerate, FaceTalkSaveMP4

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "FaceTalkGenerate", "FaceTalkSaveMP4"]

"""Rewrite a saved Sonic workflow to use FaceTalk Generate, keeping the rest of the graph.

Works on both of ComfyUI's formats: the UI format (``nodes`` / ``links`` arrays, what
"Save" writes) and the API format (``{id: {class_type, inputs}}``, what "Export (API)"
writes and ``/prompt`` accepts). What changes:

* Sonic's loader, pre-data and sampler nodes go; the model / CLIP-vision / VAE loaders
  that fed only them go too (nothing else is removed).
* FaceTalk Generate takes the sampler's place and id, so every link from the sampler's
  slot 0 (frames) and slot 1 (fps) into Video Combine / Create Video stays as it was.
* The image and audio that fed the pre-data node feed FaceTalk Generate; the widget
  values of the pre-data and sampler nodes are carried over by name.
* A video node's ``audio`` input that came from the same recording is re-pointed to
  FaceTalk Generate's audio output (slot 2), which ends exactly with the video.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import InvalidInput
from .nodes import widget_inputs

SONIC_LOADER = "SONICTLoader"
SONIC_PREDATA = "SONIC_PreData"
SONIC_SAMPLER = "SONICSampler"
SONIC_CLASSES = frozenset({SONIC_LOADER, SONIC_PREDATA, SONIC_SAMPLER})
#: Widget order of Sonic's nodes in a UI-format ``widgets_values`` list.
PREDATA_WIDGETS = ("min_resolution", "duration", "expand_ratio")
SAMPLER_WIDGETS = ("seed", "inference_steps", "dynamic_scale", "fps")
#: The frontend stores a "control after generate" value right after a seed widget.
SEED_CONTROLS = frozenset({"fixed", "increment", "decrement", "randomize"})
#: Video nodes whose ``audio`` input is re-pointed to FaceTalk Generate's fitted audio.
VIDEO_NODES = frozenset({"CreateVideo", "VHS_VideoCombine"})

FACETALK_NODE = "FaceTalkGenerate"
FACETALK_TITLE = "FaceTalk Generate"
_FT_INPUTS = ("image", "audio")
_FT_OUTPUTS = (("image", "IMAGE"), ("fps", "FLOAT"), ("audio", "AUDIO"))


def detect_format(workflow: Any) -> str:
    """``"ui"`` or ``"api"``; anything else is refused with a message saying why."""
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) \
            and isinstance(workflow.get("links"), list):
        return "ui"
    if isinstance(workflow, dict) and workflow and all(
            isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        return "api"
    raise InvalidInput("not a ComfyUI workflow: expected the UI format (nodes + links) or the API "
                       "format ({id: {class_type, inputs}})")


def convert(workflow: dict[str, Any]) -> dict[str, Any]:
    """A converted copy of ``workflow`` (UI or API format, detected); the input is not changed."""
    if detect_format(workflow) == "ui":
        return convert_ui(workflow)
    return convert_api(workflow)


def _defaults() -> dict[str, Any]:
    return {name: spec[1]["default"] for name, spec in widget_inputs().items()}


# -- API format --------------------------------------------------------------------

def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def convert_api(workflow: dict[str, Any]) -> dict[str, Any]:
    """Convert an API-format workflow (see the module docstring)."""
    graph = copy.deepcopy(workflow)
    samplers = [nid for nid, n in graph.items() if n.get("class_type") == SONIC_SAMPLER]
    if not samplers:
        raise InvalidInput(f"no {SONIC_SAMPLER} node in this workflow: nothing to convert")
    removed: set[str] = {nid for nid, n in graph.items() if n.get("class_type") in SONIC_CLASSES}
    fed_removed: set[str] = set()
    for nid in removed:
        fed_removed.update(str(v[0]) for v in graph[nid].get("inputs", {}).values() if _is_link(v))
    for sid in samplers:
        sampler = graph[sid]["inputs"]
        predata_id = next((str(v[0]) for v in sampler.values() if _is_link(v)
                           and graph.get(str(v[0]), {}).get("class_type") == SONIC_PREDATA), None)
        if predata_id is None:
            raise InvalidInput(f"{SONIC_SAMPLER} node {sid} is not fed by a {SONIC_PREDATA} node")
        predata = graph[predata_id]["inputs"]
        for name in _FT_INPUTS:
            if not _is_link(predata.get(name)):
                raise InvalidInput(f"{SONIC_PREDATA} node {predata_id} has no {name} link")
        inputs: dict[str, Any] = {"image": predata["image"], "audio": predata["audio"], **_defaults()}
        inputs.update({k: predata[k] for k in PREDATA_WIDGETS if k in predata})
        inputs.update({k: sampler[k] for k in SAMPLER_WIDGETS if k in sampler})
        audio_src = predata["audio"]
        graph[sid] = {"class_type": FACETALK_NODE, "inputs": inputs, "_meta": {"title": FACETALK_TITLE}}
        for node in graph.values():
            if node.get("class_type") in VIDEO_NODES and node["inputs"].get("audio") == audio_src:
                node["inputs"]["audio"] = [sid, 2]
    for nid in removed - set(samplers):
        del graph[nid]
    _prune_api(graph, fed_removed - set(samplers))
    return graph


def _prune_api(graph: dict[str, Any], candidates: set[str]) -> None:
    """Drop candidates (nodes that fed a removed node) that now feed nothing, transitively."""
    while True:
        used = {str(v[0]) for n in graph.values() for v in n.get("inputs", {}).values() if _is_link(v)}
        dead = {c for c in candidates if c in graph and c not in used}
        if not dead:
            return
        for nid in dead:
            candidates.update(str(v[0]) for v in graph[nid].get("inputs", {}).values() if _is_link(v))
            del graph[nid]


# -- UI format ---------------------------------------------------------------------

def _widget_values(node: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Named widget values of a UI node, skipping the frontend's seed-control entry."""
    raw = node.get("widgets_values")
    if isinstance(raw, dict):
        return {k: raw[k] for k in names if k in raw}
    values = list(raw or [])
    out: dict[str, Any] = {}
    i = 0
    for name in names:
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        if name == "seed" and i < len(values) and values[i] in SEED_CONTROLS:
            out["control_after_generate"] = values[i]
            i += 1
    return out


def _ft_widgets_values(carried: dict[str, Any]) -> list[Any]:
    """FaceTalk Generate's widgets_values list, in its widget order (control after seed)."""
    values: list[Any] = []
    for name, default in _defaults().items():
        values.append(carried.get(name, default))
        if name == "seed":
            values.append(carried.get("control_after_generate", "fixed"))
    return values


def convert_ui(workflow: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow (see the module docstring)."""
    wf = copy.deepcopy(workflow)
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: list(link) for link in wf["links"]}
    samplers = [nid for nid, n in nodes.items() if n.get("type") == SONIC_SAMPLER]
    if not samplers:
        raise InvalidInput(f"no {SONIC_SAMPLER} node in this workflow: nothing to convert")
    removed = {nid for nid, n in nodes.items() if n.get("type") in SONIC_CLASSES} - set(samplers)
    fed_removed = {link[1] for link in links.values() if link[3] in removed or link[3] in samplers}
    keep_links: set[int] = set()
    next_link = max([wf.get("last_link_id", 0), *links]) + 1

    for sid in samplers:
        sampler = nodes[sid]
        inbound = [lk for lk in links.values() if lk[3] == sid]
        predata_id = next((lk[1] for lk in inbound
                           if nodes.get(lk[1], {}).get("type") == SONIC_PREDATA), None)
        if predata_id is None:
            raise InvalidInput(f"{SONIC_SAMPLER} node {sid} is not fed by a {SONIC_PREDATA} node")
        predata = nodes[predata_id]
        slot_names = {i: inp.get("name") for i, inp in enumerate(predata.get("inputs", []))}
        carried = {**_widget_values(predata, PREDATA_WIDGETS), **_widget_values(sampler, SAMPLER_WIDGETS)}
        feeds: dict[str, list[Any]] = {}
        for lk in links.values():
            if lk[3] == predata_id and slot_names.get(lk[4]) in _FT_INPUTS:
                feeds[slot_names[lk[4]]] = lk
        for name in _FT_INPUTS:
            if name not in feeds:
                raise InvalidInput(f"{SONIC_PREDATA} node {predata_id} has no {name} link")
        audio_src = (feeds["audio"][1], feeds["audio"][2])
        new_inputs = []
        for slot, name in enumerate(_FT_INPUTS):
            lk = links[feeds[name][0]] = [feeds[name][0], feeds[name][1], feeds[name][2], sid, slot,
                                          name.upper()]
            keep_links.add(lk[0])
            new_inputs.append({"name": name, "type": name.upper(), "link": lk[0]})
        for lk in links.values():  # a video node's audio from the same recording: the fitted audio
            target = nodes.get(lk[3], {})
            if (lk[1], lk[2]) == audio_src and target.get("type") in VIDEO_NODES:
                inputs = target.get("inputs", [])
                if lk[4] < len(inputs) and inputs[lk[4]].get("name") == "audio":
                    lk[1], lk[2] = sid, 2
        pos, order, mode = list(sampler.get("pos", [0, 0])), sampler.get("order", 0), sampler.get("mode", 0)
        sampler.clear()
        sampler.update({
            "id": sid, "type": FACETALK_NODE, "pos": pos, "size": [340, 620], "flags": {}, "order": order,
            "mode": mode, "inputs": new_inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(_FT_OUTPUTS)],
            "title": FACETALK_TITLE,
            "properties": {"Node name for S&R": FACETALK_NODE},
            "widgets_values": _ft_widgets_values(carried),
        })
    # Drop every link into or out of a removed Sonic node and into a replaced sampler,
    # except the image/audio links re-targeted above.
    for lid in list(links):
        lk = links[lid]
        if lid in keep_links:
            continue
        if lk[1] in removed or lk[3] in removed or lk[3] in samplers:
            del links[lid]
    dead = _prune_ui(nodes, links, fed_removed - set(samplers) - removed)
    for nid in removed | dead:
        del nodes[nid]
    _relink(nodes, links)
    wf["nodes"] = list(nodes.values())
    wf["links"] = [links[k] for k in sorted(links)]
    wf["last_link_id"] = max([next_link - 1, *links])
    wf["last_node_id"] = max([wf.get("last_node_id", 0), *nodes])
    return wf


def _prune_ui(nodes: dict[int, Any], links: dict[int, list[Any]], candidates: set[int]) -> set[int]:
    """Candidates (nodes that fed a removed node) that now feed nothing, transitively."""
    dead: set[int] = set()
    while True:
        used = {lk[1] for lk in links.values()}
        now = {c for c in candidates if c in nodes and c not in dead and c not in used}
        if not now:
            return dead
        dead |= now
        for lid in [lid for lid, lk in links.items() if lk[3] in now]:
            candidates.add(links[lid][1])
            del links[lid]


def _relink(nodes: dict[int, Any], links: dict[int, list[Any]]) -> None:
    """Rewrite every node's input ``link`` and output ``links`` from the link table."""
    for nid, node in nodes.items():
        for slot, inp in enumerate(node.get("inputs") or []):
            inp["link"] = next((lid for lid, lk in links.items() if lk[3] == nid and lk[4] == slot), None)
        for slot, out in enumerate(node.get("outputs") or []):
            ids = sorted(lid for lid, lk in links.items() if lk[1] == nid and lk[2] == slot)
            out["links"] = ids or None
            if ids:
                out["slot_index"] = slot

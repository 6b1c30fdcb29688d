"""Motion to pixels: the face rig, the backward-map rasterizer, mouth and eye layers, the renderer."""

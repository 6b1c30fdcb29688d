"""Measuring facetalk from the outside: lip-sync evaluation of a video, speed and stream benchmarks."""

"""Media in and out: portrait and audio decoding, the MP4 writer, test speech (espeak-ng)."""

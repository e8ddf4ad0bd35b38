"""What one machine serves, next to what the same machine does without a server.

`python -m loadtest.benchmark --model random-base --out results/` measures, in one run: the Hugging Face
pipeline (what a user would run instead), the exported ONNX model in ONNX Runtime in-process (the
engine's ceiling), the preprocessor alone, and the served `beit` ensemble through the SDK over HTTP and
gRPC with dynamic batching on and off. Everything is compared as ratios within the run: absolute numbers
move with the machine and whatever else it is doing.
"""

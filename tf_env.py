"""TensorFlow's process settings for this project; import before tensorflow.

Environment variables are read once, when TensorFlow loads, so the command
line, the tests and the benchmarks import this first and all run the same
kernels. A value already set in the environment wins.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's start-up notices quiet
# oneDNN's CPU kernels: faster on the conv nets (results/benchmarks.md), not on
# by default in every TensorFlow build; the golden parity tests pass with them.
# TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

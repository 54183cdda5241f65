"""`python -m bench` (make bench): convzoo against raw ONNX Runtime, a naive PyTorch endpoint and a bare route."""

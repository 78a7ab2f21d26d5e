"""adapters/onnx"""

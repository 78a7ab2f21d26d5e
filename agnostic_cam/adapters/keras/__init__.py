"""adapters/keras"""

"""adapters/pytorch"""

"""opens2s.serving"""

"""opens2s.audio"""

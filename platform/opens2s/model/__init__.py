"""opens2s.model"""

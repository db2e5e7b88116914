"""opens2s.data"""

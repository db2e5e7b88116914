"""opens2s.train"""

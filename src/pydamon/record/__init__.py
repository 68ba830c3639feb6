"""pydamon.record"""

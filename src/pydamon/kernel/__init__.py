"""pydamon.kernel"""

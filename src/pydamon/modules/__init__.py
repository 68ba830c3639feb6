"""pydamon.modules"""

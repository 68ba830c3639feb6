"""pydamon.damos"""

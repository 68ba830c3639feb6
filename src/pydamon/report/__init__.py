"""pydamon.report"""

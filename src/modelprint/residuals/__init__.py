"""residuals"""

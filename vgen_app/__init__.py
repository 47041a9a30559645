"""vgen: AI video generation SaaS."""

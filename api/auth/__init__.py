"""Sign-in (WeChat, staff, development), tokens, refresh rotation and sessions."""

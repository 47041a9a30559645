"""Webhooks — being written."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

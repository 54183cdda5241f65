"""Dependencies of the routes: objects created by the lifespan and kept on `app.state`.

They are `async def` on purpose: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per
request for a mere attribute lookup (measured: a large share of a small model's request cost).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request

from service.manager import ModelManager
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


async def get_preprocess_pool(request: Request) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor = request.app.state.preprocess_pool
    return pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
PreprocessPoolDep = Annotated[ThreadPoolExecutor, Depends(get_preprocess_pool)]

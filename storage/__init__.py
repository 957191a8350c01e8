"""LevelDB (plyvel) stores: blocks with certificates, versioned application state, consensus journal."""

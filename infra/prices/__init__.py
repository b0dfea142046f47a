"""USD price sources."""

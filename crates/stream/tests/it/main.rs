mod window;

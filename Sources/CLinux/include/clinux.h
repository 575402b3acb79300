int cl_dummy(void);
